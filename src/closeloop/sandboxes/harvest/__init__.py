"""A local Harvest (v2 API) sandbox: the PSA of the first scenario."""
