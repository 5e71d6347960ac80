"""A real Tryton server run locally for development, tests and the demo."""
