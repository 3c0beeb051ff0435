"""Packaging beyond pyproject.toml: the shipped models.

The top-level ``models/`` folder (shipped weights and cards, see models/README.md) is installed inside the
package as ``streampick/_models``, so a non-editable ``pip install .`` finds them too; pyproject.toml's
package discovery cannot map a folder outside the package, hence this file.  Everything else is in
pyproject.toml.
"""
from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["streampick", "streampick.*"]), "streampick._models"],
    package_dir={"streampick._models": "models"},
    package_data={"streampick._models": ["*.pt", "*.card.json", "README.md", "leave-one-out/*.pt",
                                        "leave-one-out/*.card.json"]},
)
