"""One way for tests to forget every cached settings object after changing ``TQ_*`` variables.

Each owner of settings (the engine, each family, the admin service, the operator) has its own
``lru_cache``d accessor; ``clear_settings_caches`` clears all of them. A module that was never
imported has nothing cached, so it is not imported here (the admin app stays unloaded where a test
does not need it). tests/cli/test_settings_doc.py checks that this list names every settings class.
"""

from __future__ import annotations

import sys

# module -> its cached accessor
SETTINGS_ACCESSORS: dict[str, str] = {
    "tq.settings": "get_settings",
    "tq_services.messaging.settings": "get_messaging_settings",
    "tq_services.webhooks.settings": "get_webhook_settings",
    "tq_services.workflows.settings": "get_workflow_settings",
    "tq_services.plugins.settings": "get_plugin_settings",
    "tq_services.media.settings": "get_media_settings",
    "tq_services.search.settings": "get_search_settings",
    "tq_services.ai.settings": "get_ai_settings",
    "tq_services.analytics.settings": "get_analytics_settings",
    "tq_services.admin.settings": "get_admin_settings",
    "tq_operator.settings": "get_operator_settings",
}


def clear_settings_caches() -> None:
    """Clear the cache of every settings accessor loaded so far: the next call reads the environment."""
    for module_name, accessor in SETTINGS_ACCESSORS.items():
        module = sys.modules.get(module_name)
        if module is not None:
            getattr(module, accessor).cache_clear()
