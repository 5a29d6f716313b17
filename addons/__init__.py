"""pouch's chain links, one mitmproxy addon per file; addons/pouch.py orders them."""
