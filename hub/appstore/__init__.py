"""Where apps come from: the AppStore interface (``base.py``) and its implementations side by side.

``static.py`` (the ``PUSHER_APP_*`` app), ``file.py`` (a watched apps file), ``redis.py`` (apps in the
deployment's Redis) and ``postgres.py`` (a PostgreSQL table); ``factory.py`` picks one from Settings.
"""
