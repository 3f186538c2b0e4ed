namespace PciPassthrough.Errors;

/// <summary>The stable error codes of the HTTP contract, one per domain error.</summary>
public static class ErrorCodes
{
    public const string NotFound = "not_found";
    public const string InUse = "in_use";
    public const string NotOwner = "not_owner";
    public const string NotBound = "not_bound";
    public const string AlreadyBound = "already_bound";
    public const string AlreadyExists = "already_exists";
    public const string NameExists = "name_exists";
    public const string InvalidName = "invalid_name";
    public const string InvalidPciAddress = "invalid_pci_address";
    public const string DeviceNotFound = "device_not_found";
    public const string VfioNotAvailable = "vfio_not_available";
    public const string IommuGroupConflict = "iommu_group_conflict";
    public const string DeviceChanged = "device_changed";
    public const string UnbindTimeout = "unbind_timeout";
    public const string Quarantined = "quarantined";
    public const string StorageUnavailable = "storage_unavailable";
    public const string PreconditionFailed = "precondition_failed";
    public const string ValidationFailed = "validation_failed";
    public const string OperationFailed = "operation_failed";
    public const string ResetUnsupported = "reset_unsupported";
    public const string Internal = "internal_error";
}
