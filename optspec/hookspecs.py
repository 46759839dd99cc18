import pluggy

hookspec = pluggy.HookspecMarker("optspec")
hookimpl = pluggy.HookimplMarker("optspec")
