"""Attack plug-ins for privfed.

Importing the package registers the built-in attacks in :data:`attacks.base.ATTACKS`;
third-party attacks arrive through the ``privfed.attacks`` entry-point group on first lookup.
"""

from attacks.base import register_builtins

register_builtins()
