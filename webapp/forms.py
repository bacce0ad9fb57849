"""Forms for the pages' writes; each hands its cleaned data to a service."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm

from annotations import taxonomy
from annotations.consensus import available as consensus_strategies
from annotations.errors import DomainError
from annotations.services import accounts

_PRESET_LABELS = {"vindr_cxr": "VinDr-CXR", "nih": "NIH ChestX-ray boxes",
                  "chestxray14": "NIH ChestX-ray14 findings",
                  "lung_disease_9": "9-class lung disease", "cxr_6": "6-class findings"}


def _strategy_choices() -> list[tuple[str, str]]:
    return [(name, name.replace("_", " ")) for name in consensus_strategies()]


def _preset_summary(spec) -> str:
    boxes = sum(not c.image_level for c in spec)
    image = sum(c.image_level and c.name != taxonomy.NO_FINDING for c in spec)
    parts = [f"{boxes} box classes" if boxes else "", f"{image} findings" if image else ""]
    return " + ".join([p for p in parts if p] + ["No finding"])


class ProjectCreateForm(forms.Form):
    name = forms.CharField(max_length=200)
    slug = forms.SlugField(max_length=50, required=False,
                           help_text="Short id used in URLs; from the name when empty.")
    taxonomy_preset = forms.ChoiceField(label="Taxonomy", initial="vindr_cxr")
    custom_classes = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Custom taxonomy: one box class per line (used instead of the preset).")
    custom_image_classes = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}),
        label="Image-level findings",
        help_text="Custom taxonomy: one image-level finding per line, picked per image "
                  "(with the box classes above, or alone).")
    anatomy_masks = forms.BooleanField(
        required=False, label="Readers also paint the lung fields and the heart (masks)",
        help_text="The anatomy preset: right lung, left lung, heart; the cardiothoracic "
                  "ratio is measured from them.")
    custom_mask_classes = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), label="Other masks",
        help_text="One structure or finding per line that readers paint as a mask "
                  "(e.g. a finding's extent).")
    readers_per_image = forms.IntegerField(min_value=1, max_value=17, initial=3,
                                           label="Readers per image (k)")
    consensus_strategy = forms.ChoiceField(initial="wbf")
    show_prelabels = forms.BooleanField(required=False, label="Show model pre-labels to readers")
    clahe = forms.BooleanField(required=False, label="CLAHE contrast enhancement on display")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["taxonomy_preset"].choices = [
            (name, f"{_PRESET_LABELS.get(name, name)} ({_preset_summary(spec)})")
            for name, spec in sorted(taxonomy.PRESETS.items())]
        self.fields["consensus_strategy"].choices = _strategy_choices()

    def service_kwargs(self) -> dict:
        data = self.cleaned_data
        classes, image, masks = (
            [c.strip() for c in (data.get(key) or "").splitlines() if c.strip()]
            for key in ("custom_classes", "custom_image_classes", "custom_mask_classes"))
        return {
            "name": data["name"], "slug": data.get("slug") or None,
            "taxonomy_preset": None if classes or image else data["taxonomy_preset"],
            "class_names": classes or None, "image_classes": image or None,
            "mask_preset": "anatomy" if data.get("anatomy_masks") else None,
            "mask_classes": masks or None,
            "readers_per_image": data["readers_per_image"],
            "consensus_strategy": data["consensus_strategy"],
            "show_prelabels": data["show_prelabels"], "clahe": data["clahe"],
        }


class ConsensusStrategyForm(forms.Form):
    consensus_strategy = forms.ChoiceField(label="Strategy")
    params = forms.JSONField(required=False, initial=dict,
                             widget=forms.Textarea(attrs={"rows": 2}),
                             help_text='Strategy parameters as JSON, e.g. {"iou_thr": 0.4}.')

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["consensus_strategy"].choices = _strategy_choices()

    def clean_params(self):
        value = self.cleaned_data.get("params")
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise forms.ValidationError("parameters must be a JSON object")
        return value


class ReaderCreateForm(forms.Form):
    """The password is checked by the service (the platform's one password policy);
    the view shows its refusal on the password field."""

    email = forms.EmailField()
    code = forms.CharField(max_length=32, help_text="Reader code shown everywhere, e.g. R9.")
    password = forms.CharField(
        required=False, strip=False, widget=forms.PasswordInput(render_value=False),
        help_text=f"At least {settings.PASSWORD_MIN_LENGTH} characters, not a common or "
                  "all-digit password; leave empty to set it later in the admin.")


class ThrottledAuthenticationForm(AuthenticationForm):
    """Django's sign-in form, checked by ``accounts.sign_in``: too many failures
    from one client lock that username (and that client) out for a while."""

    #: Set when the refusal was the throttle, so the page can answer 429.
    throttled = False

    def clean(self) -> dict:
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if username is not None and password:
            try:
                self.user_cache = accounts.sign_in(
                    username=username, password=password, request=self.request,
                    ip=accounts.client_address(self.request.META if self.request else {}))
            except DomainError as exc:
                if exc.code != "throttled":
                    raise self.get_invalid_login_error() from exc
                self.throttled = True
                raise forms.ValidationError(exc.message, code="throttled") from exc
            self.confirm_login_allowed(self.user_cache)
        return self.cleaned_data


class ThrottledAdminAuthenticationForm(ThrottledAuthenticationForm, AdminAuthenticationForm):
    """The Django admin's sign-in: the same throttle, and the admin's staff-only rule
    (``AdminAuthenticationForm.confirm_login_allowed``)."""
