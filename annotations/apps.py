from django.apps import AppConfig


class AnnotationsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "annotations"
    verbose_name = "CXR annotations"

    def ready(self) -> None:
        # the pipeline's reactions to domain events (annotations.handlers): every Django
        # process, web, worker, beat or command, reacts the same way
        from annotations import handlers  # noqa: F401
