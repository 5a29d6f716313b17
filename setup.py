"""What pyproject.toml cannot say: the chain's links live in addons/ in the repository and ship
as the package ``pouch.addons``, so an installed pouch has its chain (``pouch addon-path``)
without putting a package named as commonly as ``addons`` at the top of site-packages.

Folders of data (pouch/tokens/data, pouch/pricing/reference) count as packages, so that their
files, shipped by MANIFEST.in, belong to a package of their own."""

from setuptools import find_namespace_packages, setup

setup(
    packages=[*find_namespace_packages(include=["pouch", "pouch.*"]), "pouch.addons",
              *(f"pouch.addons.{name}" for name in find_namespace_packages("addons"))],
    package_dir={"pouch.addons": "addons"},
)
