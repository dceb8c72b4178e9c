"""The built-in attack plug-ins of privfed.

They register through the ``privfed.attacks`` entry points declared in ``pyproject.toml``, as a
third-party package's attacks do; importing this package registers nothing. The plug-in API
lives in :mod:`privfed.attack_api` (re-exported by :mod:`attacks.base`).
"""
