"""The top-up session's sub-machines: each a part of `TopUpSession` with its handlers and
the helpers only it uses, on the state `SessionCore` holds."""
