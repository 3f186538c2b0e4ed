using System.ComponentModel;
using PciPassthrough.Vfio;

namespace PciPassthrough.Daemon.Api.Contracts;

/// <summary>What a bind or unbind would do (<c>?dry_run=true</c>); nothing is written.</summary>
public sealed record OperationPlanDto
{
    [Description("bind or unbind")]
    public required string Operation { get; init; }

    [Description("Always true: this is a plan, nothing was changed")]
    public required bool DryRun { get; init; }

    public required string DeviceId { get; init; }

    public required string PciAddress { get; init; }

    public required int IommuGroup { get; init; }

    [Description("Whether the whole IOMMU group is bound (or was bound) with the device")]
    public required bool Group { get; init; }

    [Description("Whether the real operation would pass every check")]
    public required bool WouldSucceed { get; init; }

    [Description("The error code the real operation would be refused with, or null")]
    public required string? WouldFailWith { get; init; }

    [Description("Kernel writes, in order")]
    public required IReadOnlyList<KernelStep> Steps { get; init; }

    [Description("Every function of the IOMMU group, its driver now, and what would happen to it")]
    public required IReadOnlyList<PlanMember> Members { get; init; }

    [Description("Functions that keep the group from being passed through")]
    public required IReadOnlyList<BlockingDevice> BlockingDevices { get; init; }

    [Description("Processes holding the device")]
    public required IReadOnlyList<DeviceHolder> Holders { get; init; }

    public static OperationPlanDto From(OperationPlan plan) => new()
    {
        Operation = plan.Operation,
        DryRun = true,
        DeviceId = plan.DeviceId,
        PciAddress = plan.PciAddress,
        IommuGroup = plan.IommuGroup,
        Group = plan.Group,
        WouldSucceed = plan.WouldSucceed,
        WouldFailWith = plan.WouldFailWith,
        Steps = plan.Steps,
        Members = plan.Members,
        BlockingDevices = plan.Blockers,
        Holders = plan.Holders,
    };
}
