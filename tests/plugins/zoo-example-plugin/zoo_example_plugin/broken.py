"""A plugin whose import fails, as when one of its own dependencies is missing."""
raise ImportError("zoo_example_plugin.broken needs the package 'not-installed-anywhere'")
