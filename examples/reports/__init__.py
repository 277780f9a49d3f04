"""An example app whose work runs as Django tasks on TaskHub's workers."""
