"""De-identification of DICOM datasets (DICOM PS3.15 Annex E, Basic Application Level
Confidentiality Profile).

:func:`deidentify` applies the basic profile's actions to a copy of a dataset:

* **X** (remove): the attributes of :data:`REMOVE` (names, addresses, IDs, physicians, operators,
  institution, device serials, descriptions and comments, request/performed-procedure details…),
  every private element, curve data (groups ``50xx``) and overlay comments;
* **Z** (empty): the Type 2 attributes of :data:`EMPTY` (patient name/ID/birth date/sex, study
  date/time/ID, accession number, referring physician) are kept but emptied;
* **U** (replace): every UID except class and transfer-syntax UIDs gets a new UID, the same new
  UID for the same old one within one ``uid_map`` (pass one map to keep a series consistent);
* dates and times (VR DA/DT/TM) and person names (VR PN) not covered above are removed, which is
  stricter than the profile (it has no "retain dates" option here);
* ``PatientIdentityRemoved = "YES"`` and ``DeidentificationMethod`` are set.

The writers of this package never copy a source header; they build new datasets and take only a
whitelist of technical attributes (:data:`CARRY`), so this helper is a second line of defence and a
tool for users who want to clean their own files.
"""

from __future__ import annotations

from typing import Any

from pydicom.datadict import keyword_dict
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

__all__ = ["deidentify", "REMOVE", "EMPTY", "CARRY", "DEID_METHOD"]

DEID_METHOD = "PS3.15 Annex E Basic Profile (jaxmedrf)"  # LO: at most 64 characters

# Technical, non-identifying attributes that writers may carry from a source volume.
CARRY = ("BodyPartExamined", "PatientPosition", "KVP", "ConvolutionKernel")

EMPTY = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "StudyID", "AccessionNumber", "ReferringPhysicianName", "ContentDate", "ContentTime",
)

_REMOVE_CANDIDATES = """
AcquisitionComments AcquisitionContextSequence AcquisitionDate AcquisitionDateTime
AcquisitionDeviceProcessingDescription AcquisitionProtocolDescription AcquisitionTime
ActualHumanPerformersSequence AdditionalPatientHistory AdmissionID AdmittingDate
AdmittingDiagnosesCodeSequence AdmittingDiagnosesDescription AdmittingTime Allergies
AuthorObserverSequence BranchOfService CassetteID CommentsOnThePerformedProcedureStep
ConfidentialityConstraintOnPatientDataDescription ContentCreatorName
ContentCreatorIdentificationCodeSequence ContentSequence ContributionDescription
CountryOfResidence CurrentPatientLocation CurveDate CurveTime CustodialOrganizationSequence
DataSetTrailingPadding DerivationDescription DetectorID DeviceSerialNumber DeviceUID
DigitalSignaturesSequence DischargeDiagnosisDescription DistributionAddress DistributionName
EthnicGroup FillerOrderNumberImagingServiceRequest FrameComments GantryID GeneratorID
GraphicAnnotationSequence HumanPerformerName HumanPerformerOrganization IconImageSequence
IdentifyingComments ImageComments ImagePresentationComments ImagingServiceRequestComments
Impressions InstanceCreationDate InstanceCreationTime InstitutionAddress
InstitutionalDepartmentName InstitutionalDepartmentTypeCodeSequence InstitutionCodeSequence
InstitutionName InsurancePlanIdentification IntendedRecipientsOfResultsIdentificationSequence
InterpretationApproverSequence InterpretationAuthor InterpretationDiagnosisDescription
InterpretationIDIssuer InterpretationRecorder InterpretationText InterpretationTranscriber
IssuerOfAdmissionID IssuerOfPatientID IssuerOfServiceEpisodeID LastMenstrualDate MedicalAlerts
MedicalRecordLocator MilitaryRank ModifiedAttributesSequence ModifiedImageDescription
ModifyingDeviceID NameOfPhysiciansReadingStudy NamesOfIntendedRecipientsOfResults Occupation
OperatorIdentificationSequence OperatorsName OriginalAttributesSequence
OrderCallbackPhoneNumber OrderEnteredBy OrderEntererLocation OtherPatientIDs
OtherPatientIDsSequence OtherPatientNames OverlayDate OverlayTime ParticipantSequence
PatientAddress PatientAge PatientBirthName PatientBirthTime PatientComments
PatientInstitutionResidence PatientInsurancePlanCodeSequence PatientMotherBirthName
PatientPrimaryLanguageCodeSequence PatientPrimaryLanguageModifierCodeSequence
PatientReligiousPreference PatientSexNeutered PatientSize PatientState PatientTelephoneNumbers
PatientTransportArrangements PatientWeight PerformedLocation PerformedProcedureStepDescription
PerformedProcedureStepEndDate PerformedProcedureStepEndTime PerformedProcedureStepID
PerformedProcedureStepStartDate PerformedProcedureStepStartTime PerformedStationAETitle
PerformedStationGeographicLocationCodeSequence PerformedStationName
PerformedStationNameCodeSequence PerformingPhysicianIdentificationSequence
PerformingPhysicianName PersonAddress PersonIdentificationCodeSequence PersonName
PersonTelephoneNumbers PhysicianApprovingInterpretation
PhysiciansReadingStudyIdentificationSequence PhysiciansOfRecord
PhysiciansOfRecordIdentificationSequence PlacerOrderNumberImagingServiceRequest PlateID
PreMedication PregnancyStatus ProtocolName ReasonForTheImagingServiceRequest ReasonForStudy
ReferencedDigitalSignatureSequence ReferencedPatientAliasSequence ReferencedPatientSequence
ReferencedPerformedProcedureStepSequence ReferencedSOPInstanceMACSequence
ReferencedStudySequence ReferringPhysicianAddress ReferringPhysicianIdentificationSequence
ReferringPhysicianTelephoneNumbers RegionOfResidence RequestAttributesSequence
RequestedContrastAgent RequestedProcedureComments RequestedProcedureDescription
RequestedProcedureID RequestedProcedureLocation RequestingPhysician RequestingService
ResponsibleOrganization ResponsiblePerson ResultsComments ResultsDistributionListSequence
ResultsIDIssuer ReviewerName ScheduledHumanPerformersSequence
ScheduledPatientInstitutionResidence ScheduledPerformingPhysicianIdentificationSequence
ScheduledPerformingPhysicianName ScheduledProcedureStepEndDate ScheduledProcedureStepEndTime
ScheduledProcedureStepDescription ScheduledProcedureStepLocation
ScheduledProcedureStepStartDate ScheduledProcedureStepStartTime ScheduledStationAETitle
ScheduledStationGeographicLocationCodeSequence ScheduledStationName
ScheduledStationNameCodeSequence ScheduledStudyLocation ScheduledStudyLocationAETitle
SeriesDate SeriesDescription SeriesTime ServiceEpisodeDescription ServiceEpisodeID
SmokingStatus SourceImageSequence SpecialNeeds StationName StudyComments StudyDescription
StudyIDIssuer TextComments TextString TopicAuthor TopicKeywords TopicSubject TopicTitle
VerifyingObserverIdentificationCodeSequence VerifyingObserverName VerifyingObserverSequence
VerifyingOrganization VisitComments
""".split()

REMOVE = tuple(k for k in _REMOVE_CANDIDATES if k in keyword_dict)

# UIDs that identify a kind of thing, not an instance: kept.
_KEEP_UIDS = {"SOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID", "ImplementationClassUID",
              "ReferencedSOPClassUID", "CodingSchemeUID", "RelatedGeneralSOPClassUID",
              "OriginalSpecializedSOPClassUID", "CreatorVersionUID", "PrivateRecordUID"}


def _clean(ds: Dataset, uid_map: dict[str, str]) -> None:
    remove = set(REMOVE)
    empty = set(EMPTY)
    for elem in list(ds):
        tag = elem.tag
        kw = elem.keyword
        if tag.is_private or (tag.group & 0xFF00) == 0x5000 or (
            (tag.group & 0xFF00) == 0x6000 and tag.element == 0x4000
        ):
            del ds[tag]
        elif kw in empty:
            elem.value = None if elem.VR == "SQ" else ""
        elif kw in remove:
            del ds[tag]
        elif elem.VR == "UI" and kw not in _KEEP_UIDS:
            if elem.VM > 1:
                elem.value = [uid_map.setdefault(str(u), generate_uid()) for u in elem.value]
            elif elem.value:
                elem.value = uid_map.setdefault(str(elem.value), generate_uid())
        elif elem.VR in ("DA", "DT", "TM", "PN"):
            del ds[tag]
        elif elem.VR == "SQ":
            for item in elem.value:
                _clean(item, uid_map)


def deidentify(dataset: Dataset, *, uid_map: dict[str, str] | None = None) -> Dataset:
    """A de-identified copy of ``dataset`` (PS3.15 Annex E basic profile; see module docstring).

    Args:
        dataset: a pydicom dataset (left unchanged).
        uid_map: old UID → new UID, filled as UIDs are replaced; pass the same dict for every
            file of a study so that references between them stay consistent.

    Returns:
        A new dataset with identifying attributes removed or emptied and UIDs replaced.
    """
    import copy

    if not isinstance(dataset, Dataset):
        raise ValueError(f"deidentify needs a pydicom Dataset, got {type(dataset).__name__}")
    uid_map = {} if uid_map is None else uid_map
    out = copy.deepcopy(dataset)
    _clean(out, uid_map)
    fm: Any = getattr(out, "file_meta", None)
    if fm is not None:
        if "MediaStorageSOPInstanceUID" in fm and "SOPInstanceUID" in out:
            fm.MediaStorageSOPInstanceUID = out.SOPInstanceUID
        for elem in list(fm):
            if elem.keyword in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle",
                                "ReceivingApplicationEntityTitle", "PrivateInformation",
                                "PrivateInformationCreatorUID"):
                del fm[elem.tag]
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = DEID_METHOD
    return out

