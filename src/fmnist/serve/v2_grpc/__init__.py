"""KServe V2's gRPC API (package ``inference``): the .proto and the stubs protoc made from it.

The stubs are checked in. They were made with grpcio-tools 1.81.1 (protobuf 6.33), from src/:

    python -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. fmnist/serve/v2_grpc/grpc_predict_v2.proto
    sed -i 's/_descriptor_pool.Default().AddSerializedFile/_descriptor_pool.DescriptorPool().AddSerializedFile/' \\
        fmnist/serve/v2_grpc/grpc_predict_v2_pb2.py

The second line gives the messages a descriptor pool of their own, so a client in the same process
(Triton's ``tritonclient.grpc`` defines the same ``inference.*`` names) does not clash with them.
"""
