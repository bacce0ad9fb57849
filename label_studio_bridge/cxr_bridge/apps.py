"""App config: connects the model guards when Label Studio starts."""

from django.apps import AppConfig


class CxrBridgeConfig(AppConfig):
    name = "cxr_bridge"
    verbose_name = "CXR platform bridge"

    def ready(self) -> None:
        from cxr_bridge import guards

        guards.connect()
