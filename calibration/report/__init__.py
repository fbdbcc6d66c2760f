"""Reports over profiles: comparison of two profiles (and its renderings) and the roofline plot."""
