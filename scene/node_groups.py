"""Geometry Nodes groups built in code: the point-cloud display and the depth-plane confidence filter.

Groups are shared between imports: an existing group is reused when its marker and interface match, so two
imports do not produce "VGGT Point Cloud.001". Socket identifiers ("Socket_N") are always looked up from
`ng.interface.items_tree`, never hard-coded.
"""

from __future__ import annotations

import bpy

POINT_CLOUD_GROUP = "VGGT Point Cloud"
DEPTH_PLANE_GROUP = "VGGT Depth Plane Filter"
_MARKER_KEY = "vggt_group"

# (name, in_out, socket_type) in interface order.
_POINT_CLOUD_INTERFACE = (
    ("Geometry", "INPUT", "NodeSocketGeometry"),
    ("Min Confidence", "INPUT", "NodeSocketFloat"),
    ("Point Radius", "INPUT", "NodeSocketFloat"),
    ("Material", "INPUT", "NodeSocketMaterial"),
    ("Geometry", "OUTPUT", "NodeSocketGeometry"),
)
_DEPTH_PLANE_INTERFACE = (
    ("Geometry", "INPUT", "NodeSocketGeometry"),
    ("Min Confidence", "INPUT", "NodeSocketFloat"),
    ("Geometry", "OUTPUT", "NodeSocketGeometry"),
)


def socket_identifier(group: bpy.types.NodeTree, name: str, in_out: str = "INPUT") -> str:
    """Identifier of the interface socket called `name` (what modifier["..."] and node sockets are keyed by)."""
    for item in group.interface.items_tree:
        if item.item_type == "SOCKET" and item.in_out == in_out and item.name == name:
            return item.identifier
    raise KeyError(f"node group {group.name!r} has no {in_out.lower()} socket {name!r}")


def _interface_signature(group: bpy.types.NodeTree) -> tuple:
    # Blender lists outputs before inputs in items_tree: compare in a fixed order.
    return tuple(sorted(
        (item.name, item.in_out, item.socket_type)
        for item in group.interface.items_tree
        if item.item_type == "SOCKET"
    ))


def _find_reusable(name: str, marker: str, interface: tuple) -> bpy.types.NodeTree | None:
    for group in bpy.data.node_groups:
        if group.bl_idname != "GeometryNodeTree" or group.get(_MARKER_KEY) != marker:
            continue
        if _interface_signature(group) == tuple(sorted(interface)):
            return group
    return None


def _new_group(name: str, marker: str, interface: tuple) -> bpy.types.NodeTree:
    group = bpy.data.node_groups.new(name, "GeometryNodeTree")
    if hasattr(group, "is_modifier"):
        group.is_modifier = True
    for sock_name, in_out, sock_type in interface:
        group.interface.new_socket(sock_name, in_out=in_out, socket_type=sock_type)
    group[_MARKER_KEY] = marker
    return group


def _io_nodes(group: bpy.types.NodeTree):
    nodes = group.nodes
    g_in = nodes.new("NodeGroupInput")
    g_out = nodes.new("NodeGroupOutput")
    g_in.location = (-900, 0)
    g_out.location = (700, 0)
    return g_in, g_out


def _confidence_below(group: bpy.types.NodeTree, g_in, x: float = -600):
    """Named Attribute "conf" < Min Confidence -> the selection to delete."""
    nodes, links = group.nodes, group.links
    named = nodes.new("GeometryNodeInputNamedAttribute")
    named.data_type = "FLOAT"
    named.inputs["Name"].default_value = "conf"
    named.location = (x, -200)
    compare = nodes.new("FunctionNodeCompare")
    compare.data_type = "FLOAT"
    compare.operation = "LESS_THAN"
    compare.location = (x + 200, -150)
    links.new(named.outputs["Attribute"], compare.inputs["A"])
    links.new(g_in.outputs[socket_identifier(group, "Min Confidence")], compare.inputs["B"])
    return compare


def _output_by_identifier(node, identifier: str):
    for sock in node.outputs:
        if sock.identifier == identifier:
            return sock
    raise KeyError(identifier)


def _input_by_identifier(node, identifier: str):
    for sock in node.inputs:
        if sock.identifier == identifier:
            return sock
    raise KeyError(identifier)


def _new_confidence_filter(name: str, marker: str, interface: tuple):
    """A new group whose input Geometry loses every vertex (and the faces using it) with conf < Min Confidence.

    Returns (group, group input node, group output node, the Delete Geometry node to chain from).
    """
    group = _new_group(name, marker, interface)
    g_in, g_out = _io_nodes(group)
    compare = _confidence_below(group, g_in)
    delete = group.nodes.new("GeometryNodeDeleteGeometry")
    delete.domain = "POINT"
    delete.mode = "ALL"
    delete.location = (-150, 0)
    group.links.new(_output_by_identifier(g_in, socket_identifier(group, "Geometry")), delete.inputs["Geometry"])
    group.links.new(compare.outputs["Result"], delete.inputs["Selection"])
    return group, g_in, g_out, delete


def _link_to_output(group: bpy.types.NodeTree, g_out, socket) -> None:
    group.links.new(socket, _input_by_identifier(g_out, socket_identifier(group, "Geometry", "OUTPUT")))


def point_cloud_group() -> bpy.types.NodeTree:
    """conf < Min Confidence -> Delete Geometry -> Mesh to Points -> Set Point Radius -> Set Material."""
    marker = "point_cloud_v1"
    found = _find_reusable(POINT_CLOUD_GROUP, marker, _POINT_CLOUD_INTERFACE)
    if found is not None:
        return found
    group, g_in, g_out, delete = _new_confidence_filter(POINT_CLOUD_GROUP, marker, _POINT_CLOUD_INTERFACE)
    nodes, links = group.nodes, group.links

    to_points = nodes.new("GeometryNodeMeshToPoints")
    to_points.mode = "VERTICES"
    to_points.location = (50, 0)
    links.new(delete.outputs["Geometry"], to_points.inputs["Mesh"])

    radius = nodes.new("GeometryNodeSetPointRadius")
    radius.location = (250, 0)
    links.new(to_points.outputs["Points"], radius.inputs["Points"])
    links.new(_output_by_identifier(g_in, socket_identifier(group, "Point Radius")), radius.inputs["Radius"])

    set_mat = nodes.new("GeometryNodeSetMaterial")
    set_mat.location = (450, 0)
    links.new(radius.outputs["Points"], set_mat.inputs["Geometry"])
    links.new(_output_by_identifier(g_in, socket_identifier(group, "Material")), set_mat.inputs["Material"])

    _link_to_output(group, g_out, set_mat.outputs["Geometry"])
    return group


def depth_plane_group() -> bpy.types.NodeTree:
    """Deletes vertices (and their faces) whose conf is below Min Confidence."""
    marker = "depth_plane_v1"
    found = _find_reusable(DEPTH_PLANE_GROUP, marker, _DEPTH_PLANE_INTERFACE)
    if found is not None:
        return found
    group, _, g_out, delete = _new_confidence_filter(DEPTH_PLANE_GROUP, marker, _DEPTH_PLANE_INTERFACE)
    _link_to_output(group, g_out, delete.outputs["Geometry"])
    return group


def add_modifier(ob: bpy.types.Object, group: bpy.types.NodeTree, inputs: dict, name: str = "VGGT"):
    """Add a Geometry Nodes modifier using `group`, setting its inputs by socket name."""
    mod = ob.modifiers.new(name, "NODES")
    mod.node_group = group
    for sock_name, value in inputs.items():
        mod[socket_identifier(group, sock_name)] = value
    return mod


def set_modifier_input(ob: bpy.types.Object, sock_name: str, value, modifier_name: str = "VGGT") -> None:
    """Change a GN modifier input by socket name and tag the object so the depsgraph re-evaluates it."""
    mod = ob.modifiers[modifier_name]
    mod[socket_identifier(mod.node_group, sock_name)] = value
    ob.update_tag()
