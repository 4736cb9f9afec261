"""The admin port: an HTTP server for operators, separate from the public WebSocket/API port.

``server.py`` builds the aiohttp application (bearer-token check, JSON errors) from route registrars;
``routes.py`` lists the registrars (the apps API, the console, ...). A feature adds its endpoints by
writing a ``register(app, ctx)`` function in its own module and naming it in ``routes.REGISTRARS``.
"""
