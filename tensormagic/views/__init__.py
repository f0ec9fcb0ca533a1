"""Renderers of a Recording: text (terminal), HTML (nbconvert, GitHub, exports), panel (widgets)."""
