"""Many models, many upstreams: the routing file, the table it makes, and each stream's route (CONTRACT §9).

```
config.py   the TOML file -> frozen RoutingConfig (validated: one-line errors naming file, entry, field)
table.py    RoutingTable: name lookup (exact, then longest wildcard), per-key access, groups of deployments,
            the least-busy choice and cooldowns (Deployed)
chain.py    Route: one stream's producer (the model's group, then its fallbacks; retries before the first output)
router.py   Router: the process's current table, Router.route(request, owner), reload on SIGHUP
```

Arrows point down: ``routing`` uses ``core`` (the generation is the providers' sink) and ``upstream`` (providers);
the gateway (``gateway.py``) holds one ``Router``; nothing below imports this package. See docs/models.md.
"""

from .config import Deployment, KeyRule, ModelEntry, RoutingConfig, implicit_config, load_config
from .router import DEMO_MODEL, Router, settings_config
from .table import DeploymentStats, HealthPolicy, RoutingTable

__all__ = [
    "DEMO_MODEL",
    "Deployment",
    "DeploymentStats",
    "HealthPolicy",
    "KeyRule",
    "ModelEntry",
    "Router",
    "RoutingConfig",
    "RoutingTable",
    "implicit_config",
    "load_config",
    "settings_config",
]
