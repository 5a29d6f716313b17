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

from mitmproxy import hooks


class Chain:
    def __init__(self, *links):
        self.links = links
        for name in hooks.all_hooks:
            found = [getattr(link, name) for link in links if callable(getattr(link, name, None))]
            if found and name != "load":
                setattr(self, name, _calling(name, found))
        self._loads = [link.load for link in links if callable(getattr(link, "load", None))]

    def load(self, loader):
        for load in self._loads:
            load(loader)
        # what mitmproxy does for each addon it registers: commands and lookup by name
        master = loader.master
        for link in self.links:
            master.commands.collect_commands(link)
            master.addons.lookup.setdefault(getattr(link, "name", type(link).__name__.lower()), link)


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
