"""Files, not code: the package skeleton ``botloom.server.scaffold`` renders into a new plugin.

This package only carries the files under ``template/`` as package data; Python
sources there end in ``.tmpl`` (they hold ``${...}`` placeholders), so neither
the type checker nor an import ever treats them as botloom's own modules.
"""
