"""ワイヤーの型（Open Inference Protocol の gRPC の proto と生成物）。codecs と api の下の層。"""
