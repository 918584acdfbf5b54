"""The embedded broker: Knative Eventing's Broker + Triggers on one machine."""
