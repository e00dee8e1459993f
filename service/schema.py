"""Every domain's models, imported so Base.metadata describes the whole schema (for Alembic)."""

from service.advisories import models as advisories_models
from service.citizens import models as citizens_models
from service.db import Base
from service.dispatch import models as dispatch_models
from service.staff import models as staff_models

__all__ = ["Base", "advisories_models", "citizens_models", "dispatch_models", "staff_models"]
