"""RTMO network parts, one per module: layers, backbone, neck, dcc, head, rtmo (whole)."""
