"""The xDS side of kxds: snapshot cache, gRPC server (SotW and delta), admin endpoint."""
