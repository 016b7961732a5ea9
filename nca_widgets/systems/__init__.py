"""The built-in plug-in systems: sa-nca and rrcnn (the reference notebooks) and growing.

Each module holds one system's config and presets, its model and its `System` subclass; the
registry (`nca_widgets.registry`) builds them by name.
"""
