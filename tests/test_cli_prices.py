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
    result = run("prices", "show", "gpt-4")
    assert result.exit_code == 1 and "no price for 'gpt-4'" in result.output


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
