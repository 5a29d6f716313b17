"""The options mitmdump / mitmweb will really run with, worked out by mitmproxy's own parser and
in its order, so that pouch's defaults give way to whatever the user gave, in any form, and
the printed lines name the address really used.

mitmproxy (``mitmproxy/tools/main.py``, ``run``) applies every ``--set`` first, then
``<confdir>/config.yaml``, then the dedicated flags (``--listen-port``/``-p``,
``--listen-host``, ``--mode``, ...), each over what came before; a second ``--set`` of a
scalar option is an error ("Received multiple values"), not an override. So pouch passes its
defaults as ``--set``, the weakest form, and leaves out every one the user set.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from types import SimpleNamespace

from mitmproxy import addonmanager, options, optmanager
from mitmproxy.tools import cmdline


class Unparsed(Exception):
    """The user's arguments do not parse (or ask for help): mitmproxy itself will answer."""


def _flag_addons(tool: str) -> list:
    """The addons whose options the tool's command line has flags for (tools/dump.py, web/master.py)."""
    from mitmproxy.addons import default_addons, dumper, intercept, readfile

    if tool == "mitmdump":
        return [*default_addons(), readfile.ReadFileStdin(), dumper.Dumper()]
    from mitmproxy.tools.web import webaddons

    return [*default_addons(), readfile.ReadFileStdin(), webaddons.WebAddon(), intercept.Intercept()]


def tool_options(tool: str) -> options.Options:
    """The options ``tool`` knows, registered without a master: no addon listens to them, so
    setting them here has no effect beyond being read back (no CA made, nothing bound)."""
    opts = options.Options()
    loader = addonmanager.Loader(SimpleNamespace(options=opts, commands=SimpleNamespace(add=lambda *_: None)))
    for addon in addonmanager.traverse(_flag_addons(tool)):
        if hasattr(addon, "load"):
            addon.load(loader)
    return opts


def parse(tool: str, opts: options.Options, args: Sequence[str]) -> argparse.Namespace:
    parser = getattr(cmdline, tool)(opts)

    def stop(*_args, **_kwargs):
        raise Unparsed()

    parser.error = parser.exit = stop
    parser.print_help = lambda *_args: None
    parsed = parser.parse_args(list(args))
    if parsed.version or parsed.options or parsed.commands:
        raise Unparsed()  # mitmproxy prints and exits: nothing to run
    return parsed


def given(tool: str, args: Sequence[str]) -> set[str]:
    """The names of the options ``args`` set, whichever form they used (``--set name=...``,
    ``--listen-port``, ``-p``, an abbreviation argparse accepts, ...)."""
    opts = tool_options(tool)
    parsed = parse(tool, opts, args)
    names = {spec.partition("=")[0] for spec in parsed.setoptions}
    return names | {name for name, value in vars(parsed).items() if name in opts and value is not None}


def effective(tool: str, args: Sequence[str]) -> options.Options:
    """The options the tool will run with, given its whole command line (not counting the
    script's own options, which stay in ``deferred``). Raises Unparsed, or OptionsError for a
    value mitmproxy will refuse."""
    opts = tool_options(tool)
    parsed = parse(tool, opts, args)
    opts.set(*parsed.setoptions, defer=True)
    optmanager.load_paths(opts, os.path.join(opts.confdir, "config.yaml"), os.path.join(opts.confdir, "config.yml"))
    opts.update(**{name: value for name, value in vars(parsed).items() if name in opts and value is not None})
    return opts


def deferred(opts: options.Options, name: str) -> str | None:
    """The value given for an option mitmproxy does not know yet (the chain's ``pouch_*``)."""
    value = opts.deferred.get(name)
    if isinstance(value, optmanager._UnconvertedStrings):  # from --set: one string per time given
        value = value.val[-1] if value.val else None
    return None if value is None else str(value)


def without(tool: str, args: Sequence[str], names: set[str]) -> list[str]:
    """``args`` less every argument that sets one of ``names``, whichever form it takes
    (``--set name=...``, ``--listen-port 8080``, ``-p8080``, ``--mode=...``, an abbreviation):
    ``pouch run --workers`` gives each worker its own listeners and name instead. Arguments
    after ``--`` are kept as they are."""
    parser = getattr(cmdline, tool)(tool_options(tool))
    kept: list[str] = []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--":
            return kept + [arg] + rest
        action, value, attached = _flag(parser, arg)
        if action is None:
            kept.append(arg)
            continue
        takes_value = action.nargs != 0
        if takes_value and not attached and rest:
            value = rest.pop(0)
        setting = value.partition("=")[0] if action.dest == "setoptions" else action.dest
        if setting not in names:
            kept += [arg] if attached or not takes_value else [arg, value]
    return kept


def _flag(parser: argparse.ArgumentParser, arg: str) -> tuple[argparse.Action | None, str, bool]:
    """The option ``arg`` names (exactly, or as argparse's unique abbreviation), the value
    attached to it (``--x=1``, ``-p8080``) and whether there was one."""
    if not arg.startswith("-") or arg == "-":
        return None, "", False
    actions = parser._option_string_actions
    if arg.startswith("--"):
        flag, sep, value = arg.partition("=")
        if flag not in actions:
            matches = {actions[o] for o in actions if o.startswith(flag) and o.startswith("--")}
            if len(matches) != 1:
                return None, "", False
            return matches.pop(), value, bool(sep)
        return actions[flag], value, bool(sep)
    action = actions.get(arg[:2])
    return action, arg[2:], len(arg) > 2
