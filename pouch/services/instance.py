"""This gateway's name in the store (``pouch_instance``): the gateway addon chooses and claims
it, the budget link's reservations carry it, recovery charges what a previous run under it
left open."""

from __future__ import annotations


class Instance:
    name: str | None = None  # fixed once claimed


instance = Instance()  # one per gateway process
