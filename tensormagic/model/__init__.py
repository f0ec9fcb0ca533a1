"""What a recording is: events, tensors, autograd graphs, as plain data with no torch objects.

Everything else reads this layer (the engine makes it, the log writes and reads it, the views show
it); it imports none of them at module level.
"""
