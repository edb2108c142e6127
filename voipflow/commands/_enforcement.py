"""What the policy, ledger and rules commands share: the Kafka address, the setups."""

from __future__ import annotations

from voipflow.settings import Settings, SettingsError


def bootstrap(settings: Settings) -> str:
    """The Kafka bootstrap servers: the setting, else the local broker's address."""
    if settings.kafka.bootstrap:
        return settings.kafka.bootstrap
    try:
        from voipflow.broker import resolve_bootstrap
    except ImportError as exc:
        raise SettingsError(
            "VOIPFLOW_KAFKA_BOOTSTRAP is empty and no local broker is known; set it"
        ) from exc
    return str(resolve_bootstrap(settings.kafka, settings.data_dir))
