import json
import re
import subprocess
import sys

import pytest

from convnet.cli import build_parser, main


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_calc_reproduces_the_lecture_example(capsys):
    code, out, _ = run(capsys, "calc", "32x32x3", "--filter", "5", "--stride", "1", "--pad", "2",
                       "--filters", "10")
    assert code == 0
    assert "(32 - 5 + 2*2)/1 + 1 = 32" in out
    assert "output   32x32x10" in out
    assert "5*5*3 + 1 = 76 per filter" in out and "10 x 76 = 760" in out


@pytest.mark.parametrize(("argv", "expected"), [
    (["7x7", "-F", "3", "-S", "1"], "5x5x1"),
    (["7x7", "-F", "3", "-S", "2"], "3x3x1"),
    (["32x32", "-F", "5"], "28x28x1"),
    (["7x7", "-F", "3", "-P", "1"], "7x7x1"),
    (["56x56x64", "-F", "1", "-K", "32"], "56x56x32"),
    (["32x32x10", "--pool", "-F", "2"], "16x16x10"),
])
def test_calc_seed_examples(capsys, argv, expected):
    code, out, _ = run(capsys, "calc", *argv)
    assert code == 0
    assert f"output   {expected}" in out


def test_calc_explains_a_configuration_that_does_not_fit(capsys):
    code, out, err = run(capsys, "calc", "7x7", "--filter", "3", "--stride", "3")
    assert code == 1 and out == ""
    assert "(7 - 3 + 2*0)/3 + 1 = 2.33" in err
    assert "stride 1 or 2 fits, or pad 1 with stride 3" in err


def test_calc_json(capsys):
    code, out, _ = run(capsys, "calc", "32x32x3", "-F", "5", "-P", "2", "-K", "10", "--json")
    assert code == 0
    assert json.loads(out) == {"input": [32, 32, 3], "output": [32, 32, 10], "filter": [5, 5],
                               "stride": [1, 1], "padding": [2, 2, 2, 2], "params": 760}


def test_usage_errors_exit_2():
    with pytest.raises(SystemExit) as caught:
        main(["calc", "7x7", "--filter", "zero"])
    assert caught.value.code == 2
    with pytest.raises(SystemExit) as caught:
        main(["no-such-command"])
    assert caught.value.code == 2


def test_every_subcommand_help_shows_an_example():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    assert {"train", "evaluate", "predict", "summary", "models", "datasets", "calc",
            "demo"} <= set(subparsers.choices)
    for name, sub in subparsers.choices.items():
        assert re.search(r"^examples?:", sub.format_help(), re.M), name
        assert "convnet " + name in sub.format_help(), name


def test_summary_of_a_zoo_model_and_unknown_names(capsys):
    code, out, _ = run(capsys, "summary", "convnetjs")
    assert code == 0
    assert "conv1 (Conv2d)" in out and "16 x (5*5*3 + 1) = 1,216" in out
    code, out, _ = run(capsys, "summary", "lenet5", "--json")
    data = json.loads(out)
    assert data["total_params"] == 61706 and data["output_shape"] == [10]
    code, out, err = run(capsys, "summary", "lenet6")
    assert code == 1 and "neither a zoo model" in err


def test_models_lists_the_zoo(capsys):
    code, out, _ = run(capsys, "models", "--json")
    names = [row["name"] for row in json.loads(out)]
    assert {"lenet5", "convnetjs-mnist", "convnetjs", "tinyvgg", "vggish", "resnet8"} <= set(names)


def test_console_script_runs_as_a_unix_tool(tmp_path):
    result = subprocess.run([sys.executable, "-m", "convnet", "calc", "7x7", "-F", "3",
                             "-S", "3"], capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("convnet: error: conv: input 7x7")
    assert "Traceback" not in result.stderr


def test_one_version_for_the_command_the_module_and_the_package_metadata(capsys):
    import tomllib
    from pathlib import Path

    import convnet as cn
    from convnet.version import __version__

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert cn.__version__ == __version__
    assert capsys.readouterr().out.strip() == f"convnet {__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and pyproject["project"]["dynamic"] == ["version"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "convnet.version.__version__"}


def test_calc_advice_names_flags_not_python_keywords(capsys):
    code, _, err = run(capsys, "calc", "7x7", "--filter", "3", "--stride", "3")
    assert code == 1
    assert "or --pad same (output ceil(7/3) = 3)" in err
    assert "Pass --no-strict to floor like PyTorch" in err
    assert "padding=" not in err and "strict=False" not in err
    code, _, err = run(capsys, "calc", "4x4", "--filter", "7")
    assert "use a smaller --filter or more --pad" in err and "kernel_size" not in err


def test_calc_no_strict_floors_and_says_what_is_dropped(capsys):
    code, out, _ = run(capsys, "calc", "7x7", "-F", "3", "-S", "3", "--no-strict")
    assert code == 0
    expected = "height   (7 - 3 + 2*0)/3 + 1 = 2.33, floored to 2  (the last 1 row never covered)"
    assert expected in out
    assert "output   2x2x1" in out


def test_calc_pool_shows_its_window_and_dilation_is_explained(capsys):
    code, out, _ = run(capsys, "calc", "32x32x10", "--pool", "-F", "2")
    assert "window   2x2 max pool window, stride 2, pad 0" in out
    code, out, _ = run(capsys, "calc", "9x9x3", "-F", "3", "--dilation", "2", "-K", "4")
    assert ("dilation 2: the taps are 2 pixels apart, so the 3x3 filter covers 5x5 "
            "(F_eff = D*(F - 1) + 1 = 2*(3 - 1) + 1 = 5) with 9 weights per slice") in out
    assert "height   (9 - 5 + 2*0)/1 + 1 = 5" in out
