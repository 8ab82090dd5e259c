"""Report training options are checked by the shared strict checker (issue 13)."""

import pytest

from voxelfm.core.errors import ConfigError
from voxelfm.report.train import ReportTrainConfig


@pytest.mark.parametrize(("values", "message"), [
    ({"stage1_lr": -1e-4}, "stage1_lr=-0.0001: expected a number > 0"),
    ({"batch_size": 0}, "batch_size=0: expected an integer >= 1"),
    ({"use_cls": "yes"}, "use_cls='yes': expected true or false"),
    ({"stage2_mode": "half"}, "stage2_mode='half': expected one of 'lora', 'full'"),
    ({"lora_dropout": 1.0}, "lora_dropout=1.0: expected a number >= 0 and < 1"),
    ({"stage1_minutes": "5"}, "stage1_minutes='5': expected a number >= 0 or null"),
    ({"lora_targets": ["q_proj", 3]}, "lora_targets=['q_proj', 3]: expected a list of strings"),
])
def test_bad_report_training_values_are_one_line_errors(values, message) -> None:
    with pytest.raises(ConfigError) as info:
        ReportTrainConfig.from_dict(values)
    assert str(info.value) == message


def test_unknown_report_training_option_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^unknown report training option 'stage3_lr'; known: "):
        ReportTrainConfig.from_dict({"stage3_lr": 1.0})
    assert ReportTrainConfig.from_dict({"stage1_epochs": 1}).lora_targets[0] == "q_proj"
