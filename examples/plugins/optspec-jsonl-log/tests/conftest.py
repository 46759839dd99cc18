pytest_plugins = ["optspec.testing"]
