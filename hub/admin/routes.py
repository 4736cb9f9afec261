"""The admin port's route registrars, in the order their routes are added."""

from __future__ import annotations

from hub.admin import apps_api, console
from hub.admin.server import RouteRegistrar

REGISTRARS: tuple[RouteRegistrar, ...] = (apps_api.register, console.register)
