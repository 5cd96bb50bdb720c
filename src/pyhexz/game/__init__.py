"""Flagz itself: the rules engine (compiled), the one home of shapes and encodings, the board's
mirror symmetries, pictures of boards, and training examples on the wire.

    board.pyx / board.pxd  the engine, move for move the hexz Go server's; BOARD_SHAPE, MASK_SHAPE,
                           POLICY_SIZE, policy_index / policy_move_tuple, the cell types
    examples.py            TrainingExample protobufs and the arrays inside them, validated
    symmetry.py            the four mirror images of the board, for training augmentation
    render.py              boards as SVG pictures

Imports nothing of pyhexz but the generated protobuf module.
"""
