"""Every domain's models, imported so Base.metadata describes the whole schema (for Alembic)."""

from service import lease
from service.advisories import models as advisories_models
from service.audit import models as audit_models
from service.checkin import models as checkin_models
from service.citizens import models as citizens_models
from service.db import Base
from service.dispatch import models as dispatch_models
from service.ledger import models as ledger_models
from service.staff import models as staff_models

__all__ = [
    "Base",
    "advisories_models",
    "audit_models",
    "checkin_models",
    "citizens_models",
    "dispatch_models",
    "lease",
    "ledger_models",
    "staff_models",
]
