"""Configuration: every shipped file loads; bad keys, types and values are refused by name."""

from pathlib import Path

import pytest

from purrsight.config import Config, ConfigError, load_config, to_flat_dict
from purrsight.data.demo import SPLITS

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    config = load_config(path)
    assert isinstance(config, Config)


def test_train_config_carries_the_guides_values() -> None:
    c = load_config(CONFIG_DIR / "train_config.yaml")
    assert c.llm_model_name == "models/Qwen2.5-0.5B-Instruct"
    assert c.phase1_checkpoint_path == "checkpoints/alignment/*/aligner.pt"
    assert (c.batch_size, c.num_epochs, c.learning_rate) == (8, 10, 2e-4)
    assert (c.weight_decay, c.warmup_steps) == (0.01, 500)
    assert (c.lora_r, c.lora_alpha, c.lora_dropout) == (16, 32, 0.1)
    assert sorted(c.lora_target_modules) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert (c.data_dir, c.max_text_length, c.num_workers) == ("data/instruction", 512, 4)


def test_overrides_are_typed_and_nested() -> None:
    c = load_config(
        CONFIG_DIR / "demo.yaml", ["phase1.epochs=3", "learning_rate=1e-5", "labels=[a, b]"]
    )
    assert c.phase1.epochs == 3 and c.learning_rate == 1e-5 and c.labels == ["a", "b"]


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("phase1.batchsize=3", "unknown key 'phase1.batchsize'; allowed here: data_dir"),
        ("nonsense=1", "unknown key 'nonsense'"),
        ("phase1.batch_size=-1", "phase1.batch_size: Input should be greater than or equal to 2"),
        ("lora_r=abc", "lora_r: Input should be a valid integer"),
        (
            "encoders.image.type=clip",
            "encoders.image.type: Input should be 'efficientnet_lite0' or 'hf'",
        ),
        ("encoders.text.type=hf", "encoders.text: type 'hf' needs 'path'"),
        ("lora_dropout=1.5", "lora_dropout: Input should be less than 1"),
        ("labels=[a, a]", "labels: labels must be unique"),
        ("learning_rate=.inf", "learning_rate: must be a finite number"),
    ],
)
def test_bad_values_give_one_line_naming_the_key(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(CONFIG_DIR / "demo.yaml", [override])
    message = str(err.value)
    assert fragment in message
    assert "\n" not in message
    assert message.startswith(str(CONFIG_DIR / "demo.yaml"))


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("batch_size: 8\nlora_r: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+: invalid YAML"):
        load_config(bad)


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(listing)


def test_override_syntax_error() -> None:
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["phase1.epochs"])


def test_flat_dict_for_mlflow_params() -> None:
    flat = to_flat_dict(load_config(CONFIG_DIR / "demo.yaml"))
    assert flat["phase1.embed_dim"] == 512
    assert flat["encoders.image.type"] == "efficientnet_lite0"
    assert all(not isinstance(v, dict) for v in flat.values())


@pytest.mark.parametrize(
    "value",
    [
        "[emotion, evidence]",
        "[arousal, emotion, evidence]",
        "[emotion, arousal, evidence, advice, summary]",
        "[emotion, summary]",
        "[emotion, arousal]",
        "[]",
    ],
)
def test_answer_fields_must_start_with_the_reading_in_order(value: str) -> None:
    with pytest.raises(ConfigError, match="answer_fields"):
        load_config(None, [f"answer_fields={value}"])


@pytest.mark.parametrize(
    "value", ["[emotion]", "[emotion, arousal, evidence]", "[emotion, arousal, evidence, advice]"]
)
def test_answer_fields_may_be_the_emotion_alone_or_the_reading_and_more(value: str) -> None:
    fields = value.strip("[]").split(", ")
    assert load_config(None, [f"answer_fields={value}"]).answer_fields == fields


@pytest.mark.parametrize("value", ["[0.5, 0.5]", "[0.7, 0.3, 0]", "[0.6, -0.2, 0.6]"])
def test_demo_split_needs_three_positive_shares(value: str) -> None:
    with pytest.raises(ConfigError, match=r"demo\.split: must be 3 positive shares"):
        load_config(None, [f"demo.split={value}"])


def test_the_demo_splits_its_data_by_the_configured_shares(tmp_path) -> None:
    from purrsight.jobs.demo import ensure_demo_data

    config = load_config(
        "config/demo.yaml",
        [f"phase1.data_dir={tmp_path}", "demo.n=40", "demo.split=[0.5, 0.25, 0.25]"],
    )
    ensure_demo_data(config, regenerate=True)
    counts = {s: len((tmp_path / f"{s}.jsonl").read_text().splitlines()) for s in SPLITS}
    assert counts == {"train": 20, "val": 10, "test": 10}
