from django import forms

from transferapp.engine.config import TrainConfig
from transferapp.engine.zoo import list_bases

PRESETS = [
    ("best", "Best: a quick first model, then fine-tuning for the best accuracy"),
    ("fast", "Fast: a first model in seconds (frozen base, new top layer)"),
]
AUGMENTATION = [("none", "None"), ("light", "Light"), ("medium", "Medium"), ("strong", "Strong")]
REFIT = [("", "Default (the quick model yes, a fine-tuned one no)"), ("yes", "Yes, a fine-tuned model too"),
         ("no", "No: keep the model validation scored")]
DEPTH = [("", "Automatic: every layer when the pretrained features separate the classes poorly"),
         ("top", "Only the top blocks (quicker)"), ("all", "Every layer (slower; for images far from everyday photos)")]
VALIDATION = [("", f"Automatic: none below {TrainConfig.small_data_below} images a class (out-of-fold figures)"),
              ("always", "Always hold 20% of each class out for validation")]


class NameForm(forms.Form):
    name = forms.CharField(max_length=80)


class TrainForm(forms.Form):
    base_model = forms.ChoiceField(choices=())
    preset = forms.ChoiceField(choices=PRESETS, initial="best")
    # The advanced drawer: every field is optional and falls back to the engine's defaults.
    epochs = forms.IntegerField(required=False, min_value=1, max_value=100)
    learning_rate = forms.FloatField(required=False, min_value=1e-6, max_value=1.0)
    batch_size = forms.IntegerField(required=False, min_value=2, max_value=256)
    unfrozen_blocks = forms.IntegerField(required=False, min_value=0, max_value=6)
    depth = forms.ChoiceField(required=False, choices=DEPTH)
    augmentation = forms.ChoiceField(required=False, choices=[("", "Default")] + AUGMENTATION)
    time_budget_minutes = forms.FloatField(required=False, min_value=0.5, max_value=24 * 60)
    refit = forms.ChoiceField(required=False, choices=REFIT)
    validation = forms.ChoiceField(required=False, choices=VALIDATION)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        bases = list_bases()
        self.fields["base_model"].choices = [(b.name, b.label) for b in bases]
        self.fields["base_model"].initial = bases[0].name
        for name in ("epochs", "learning_rate", "batch_size", "unfrozen_blocks", "time_budget_minutes"):
            self.fields[name].widget.attrs["placeholder"] = "auto"  # empty: the engine's default

    def engine_config(self) -> dict:
        data = self.cleaned_data
        config = {
            "epochs": data.get("epochs"),
            "lr": data.get("learning_rate"),
            "batch_size": data.get("batch_size"),
            "unfrozen_blocks": data.get("unfrozen_blocks"),
            "depth": data.get("depth") or None,
            "augmentation": data.get("augmentation") or None,
            "time_budget_s": data["time_budget_minutes"] * 60 if data.get("time_budget_minutes") else None,
            "refit": {"yes": True, "no": False}.get(data.get("refit")),
            "refit_finetuned": {"yes": True, "no": False}.get(data.get("refit")),
            "small_data_below": 0 if data.get("validation") == "always" else None,
        }
        return {key: value for key, value in config.items() if value is not None}
