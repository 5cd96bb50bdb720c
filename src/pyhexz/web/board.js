// Draws a Flagz board (FLAGZ.md section 1) as SVG: pointy-top hexagons, odd rows shifted half a
// cell right, the same colours as the server's render.py. Cells come as [type, owner, value].
"use strict";

const HEX = { R: 20, NORMAL: 0, GRASS: 2, ROCK: 3, FLAG: 5,
  colors: { 1: "#2f6bd8", 2: "#d8392f" }, tints: { 1: "#d6e3fa", 2: "#f8d9d6" } };

function hexCenter(r, c) {
  const w = Math.sqrt(3) * HEX.R;
  return [w / 2 + 4 + c * w + (r % 2) * w / 2, HEX.R + 4 + r * 1.5 * HEX.R];
}

function hexPoints(x, y) {
  const pts = [];
  for (let k = 0; k < 6; k++) {
    const a = (Math.PI / 180) * (60 * k - 30);
    pts.push((x + HEX.R * Math.cos(a)).toFixed(1) + "," + (y + HEX.R * Math.sin(a)).toFixed(1));
  }
  return pts.join(" ");
}

// opts: {legal: [[r,c,type]...], onClick(r, c), last: [r,c], shares: {"r,c": share}}
function drawBoard(container, board, opts = {}) {
  const ns = "http://www.w3.org/2000/svg";
  const w = Math.sqrt(3) * HEX.R;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${(10 * w + 8).toFixed(0)} ${(16.5 * HEX.R + 10).toFixed(0)}`);
  const legal = new Set((opts.legal || []).map(m => m[0] + "," + m[1]));
  board.cells.forEach((row, r) => row.forEach(([type, owner, value], c) => {
    const [x, y] = hexCenter(r, c);
    const g = document.createElementNS(ns, "g");
    g.setAttribute("data-cell", r + "," + c);
    const poly = document.createElementNS(ns, "polygon");
    let fill = "#ebe5d5", text = "", textColor = "#fff";
    if (type === HEX.ROCK) fill = "#4d4d4d";
    else if (type === HEX.GRASS) { fill = "#7cc26a"; text = String(value); textColor = "#1d4a12"; }
    else if (type === HEX.FLAG) { fill = HEX.tints[owner]; text = "⚑"; textColor = HEX.colors[owner]; }
    else if (owner) { fill = HEX.colors[owner]; text = String(value); }
    poly.setAttribute("points", hexPoints(x, y));
    poly.setAttribute("fill", fill);
    poly.setAttribute("stroke", "#fff");
    poly.setAttribute("stroke-width", "1.5");
    g.appendChild(poly);
    const key = r + "," + c;
    const share = opts.shares && opts.shares[key];
    if (share) {
      const dot = document.createElementNS(ns, "circle");
      dot.setAttribute("cx", x); dot.setAttribute("cy", y);
      dot.setAttribute("r", (3 + 14 * Math.sqrt(share)).toFixed(1));
      dot.setAttribute("fill", "#ff9a00"); dot.setAttribute("fill-opacity", "0.55");
      g.appendChild(dot);
    }
    if (opts.last && opts.last[0] === r && opts.last[1] === c) {
      poly.setAttribute("stroke", "#ff9a00"); poly.setAttribute("stroke-width", "3");
    }
    if (text) {
      const t = document.createElementNS(ns, "text");
      t.setAttribute("x", x); t.setAttribute("y", y + 5);
      t.setAttribute("text-anchor", "middle"); t.setAttribute("font-size", "15");
      t.setAttribute("font-weight", "bold"); t.setAttribute("fill", textColor);
      t.textContent = text;
      g.appendChild(t);
    }
    if (legal.has(key) && opts.onClick) {
      g.setAttribute("class", "cell-legal");
      const hint = document.createElementNS(ns, "circle");
      hint.setAttribute("cx", x); hint.setAttribute("cy", y); hint.setAttribute("r", "3");
      hint.setAttribute("fill", "#999");
      g.appendChild(hint);
      g.addEventListener("click", () => opts.onClick(r, c));
    }
    svg.appendChild(g);
  }));
  container.replaceChildren(svg);
}

function boardCaption(b) {
  const names = { 1: "blue", 2: "red" };
  let s = `move ${b.move} · score ${b.score[0]} : ${b.score[1]} · flags left ${b.flags_left[0]} : ${b.flags_left[1]} · `;
  if (b.over) s += b.winner ? `game over, ${names[b.winner]} wins` : "game over, draw";
  else s += `${names[b.turn]} to move`;
  return s;
}
