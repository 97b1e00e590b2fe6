.PHONY: demo test

# The README's two commands.
demo:
	scripts/demo

test:
	scripts/test
