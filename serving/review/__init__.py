"""The anti-fraud team's case queue: sign-in, cases, the linked-group graph and dispositions."""
