def register(app, handle_errors, reflow, examples) -> None:
    pass
