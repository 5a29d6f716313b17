"""The links as one mitmproxy addon.

mitmproxy looks every addon up for every event, and again for the update that follows each
flow event: with twelve links that was a dozen attribute lookups, generator steps and
argument lists per event, about eight events per request. The chain looks each
link's hooks up once, when it is made, and calls them in the links' order, as mitmproxy would
(an exception stops the remaining links of that event, as it stops a script's children).
The links stay plain addons: each can be loaded on its own, tests drive them one by one.
"""

from __future__ import annotations

import inspect

from mitmproxy import exceptions, hooks


class Chain:
    def __init__(self, *links):
        self.links = links
        for name in hooks.all_hooks:
            found = [getattr(link, name) for link in links if callable(getattr(link, name, None))]
            if found and name not in ("load", "done"):
                setattr(self, name, _calling(name, found))
        self._loads = [link.load for link in links if callable(getattr(link, "load", None))]
        self._dones = [link.done for link in links if callable(getattr(link, "done", None))]
        self._lookup = None  # mitmproxy's addons by name, where the links are listed while loaded

    def load(self, loader):
        # What mitmproxy does for each addon it registers: a name taken is an error, commands
        # are collected, the addon is found by name (a link reads another's state that way).
        lookup = loader.master.addons.lookup
        for link in self.links:
            if (name := _name(link)) in lookup:
                raise exceptions.AddonManagerError(f"An addon called '{name}' already exists.")
        for load in self._loads:
            load(loader)
        for link in self.links:
            loader.master.commands.collect_commands(link)
            lookup[_name(link)] = link
        self._lookup = lookup

    def done(self):
        try:
            for done in self._dones:
                done()
        finally:
            # Removed (a script reload): the next chain's links take these names.
            for link in self.links:
                if self._lookup is not None and self._lookup.get(_name(link)) is link:
                    del self._lookup[_name(link)]


def _name(link) -> str:
    return getattr(link, "name", type(link).__name__.lower())  # as mitmproxy names an addon


def _calling(name: str, found: list):
    if any(inspect.iscoroutinefunction(hook) for hook in found):
        async def hook(*args):
            for each in found:
                result = each(*args)
                if result is not None and inspect.isawaitable(result):
                    await result
    else:
        def hook(*args):
            for each in found:
                each(*args)
    hook.__name__ = name
    return hook
