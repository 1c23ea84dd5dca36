"""Flask extensions, created without an app and bound in ``create_app``."""

from __future__ import annotations

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect

csrf = CSRFProtect()
login_manager = LoginManager()
# Only the sign-in form is limited; storage comes from RATELIMIT_STORAGE_URI set in the factory.
limiter = Limiter(key_func=get_remote_address, default_limits=[])
