.PHONY: demo test deploy lambdas publish-agent image

# The README's two commands.
demo:
	scripts/demo

test:
	scripts/test

# The control plane on AWS (needs the SAM CLI, cargo-lambda and AWS
# credentials): the first run is guided and saves its answers in
# samconfig.toml; later runs are this one command.
deploy:
	sam build --config-file samconfig.toml
	if grep -q '^region' samconfig.toml; then \
	  sam deploy --config-file samconfig.toml; \
	else \
	  sam deploy --guided --config-file samconfig.toml; \
	fi

# Every function for Lambda (arm64), zipped, with their sizes; installs
# cargo-lambda and Zig from PyPI the first time.
lambdas:
	scripts/build-lambdas
	ls -l $${CARGO_TARGET_DIR:-target}/lambda/*/bootstrap.zip

# The agent for instances, to the bucket user data installs it from; prints
# the sha256 to give environment stacks (AgentSha256X8664, AgentSha256Arm64).
# BUCKET is the control plane's bucket (the BucketName output).
publish-agent:
	test -n "$(BUCKET)" || { echo "make publish-agent BUCKET=<release bucket>"; exit 2; }
	cargo lambda build --release --x86-64 -p slipway-agent
	cargo lambda build --release --arm64 -p slipway-agent
	for arch in x86_64 aarch64; do \
	  bin="target/$$arch-unknown-linux-gnu/release/slipway-agent"; \
	  aws s3 cp "$$bin" "s3://$(BUCKET)/_slipway/agent/$$arch/slipway-agent"; \
	  echo "$$arch sha256: $$(sha256sum "$$bin" | cut -d' ' -f1)"; \
	done

# The base image (needs Packer and AWS credentials; the agent published
# first). SHA256_X86_64 / SHA256_AARCH64 are what publish-agent printed.
image:
	test -n "$(BUCKET)" || { echo "make image BUCKET=<release bucket> SHA256_X86_64=… SHA256_AARCH64=…"; exit 2; }
	packer init infra/base-image
	packer build -var bucket=$(BUCKET) \
	  -var agent_sha256_x86_64=$(SHA256_X86_64) -var agent_sha256_aarch64=$(SHA256_AARCH64) \
	  infra/base-image
