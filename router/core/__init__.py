"""The router core: one transport-free object every front door calls (route, settle), and its config snapshot."""
