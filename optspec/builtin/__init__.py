"""The built-in plugins: ordinary plugin modules, loaded first and blockable like any other."""
