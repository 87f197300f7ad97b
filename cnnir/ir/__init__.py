"""The IR: tensor types, values, nodes, graphs, the printer and the verifier."""

from cnnir.ir.graph import ConstantData, Graph, Node, Value
from cnnir.ir.source import SourceLoc, user_location
from cnnir.ir.types import Dim, TensorType
from cnnir.ir.verifier import verify

__all__ = [
    "ConstantData", "Dim", "Graph", "Node", "SourceLoc", "TensorType", "Value", "user_location",
    "verify",
]
