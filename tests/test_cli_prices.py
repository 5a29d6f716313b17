import json

from click.testing import CliRunner

from pouch.cli.main import cli


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_list_and_show_resolve_snapshots():
    listed = json.loads(run("prices", "--provider", "openai", "--json").stdout)
    assert {p["provider"] for p in listed} == {"openai"}
    shown = json.loads(run("prices", "show", "gpt-4o-mini-2024-07-18", "--json").stdout)
    assert (shown["model"], shown["input"], shown["output"]) == ("gpt-4o-mini", "0.15", "0.6")


def test_unknown_model_has_no_price():
    result = run("prices", "show", "gpt-9-imaginary")
    assert result.exit_code == 1 and "no price for 'gpt-9-imaginary'" in result.output


def test_a_retired_model_says_when_and_what_instead():
    result = run("prices", "show", "gpt-4-0613")
    assert result.exit_code == 1
    assert "model 'gpt-4' was retired by openai on 2026-10-23: use gpt-5.6-sol instead" in result.output
    dated = json.loads(run("prices", "show", "gpt-5.1", "--json").stdout)  # priced until it retires
    assert dated["input"] == "1.25"
    assert {"retired": "2027-04-01", "use": "gpt-6-sol"}.items() <= dated["other_dates"][-1].items()


def test_openrouter_names_say_whose_price_they_are():
    shown = json.loads(run("prices", "show", "x-ai/grok-4.20", "--provider", "openrouter", "--json").stdout)
    assert shown["provider"] == "xai" and "OpenRouter passes the vendor's own price through" in shown["priced_as"]


def test_import_into_override(tmp_path, isolated_home):
    source = tmp_path / "map.json"
    source.write_text(json.dumps({
        "sample_spec": {"input_cost_per_token": 0},
        "my-local-llama": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 1e-07,
                           "output_cost_per_token": 2e-07, "max_output_tokens": 4096},
    }))
    result = run("prices", "import", str(source))
    assert result.exit_code == 0, result.output
    assert (isolated_home / "prices.json").exists()
    shown = json.loads(run("prices", "show", "my-local-llama", "--json").stdout)
    assert (shown["input"], shown["output"]) == ("0.1", "0.2")
