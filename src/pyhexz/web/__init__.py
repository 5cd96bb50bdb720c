"""The web UI: pages (the HTML, CSS and JS files here), their JSON API, SVG charts.

    ui.py      the routes of the Training, Checkpoints, Games and Play pages
    charts.py  SVG line charts drawn on the server
"""
